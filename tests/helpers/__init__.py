"""Helpers the test folders share (servers, training runs, media files, template cases)."""
