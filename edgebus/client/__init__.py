"""The client library: Producer, Consumer, Admin."""
