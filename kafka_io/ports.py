"""Local TCP ports: is one free, pick a free one."""

from __future__ import annotations

import socket


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now (the OS picks it); for brokers of tests and benchmarks."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
