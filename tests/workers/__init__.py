"""Small programs that tests run as separate OS processes."""
