"""Bridges: separate processes that connect edgebus to other systems through its public client API.

A bridge never opens log files and never imports edgebus.log or edgebus.server: if it needs something
the client API lacks, the API grows.
"""
