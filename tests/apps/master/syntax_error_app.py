"""This module does not compile."""

def app(environ, start_response)
    return []
