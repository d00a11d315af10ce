"""Where clients come in (docs/ARCHITECTURE.md, "How to add a listener").

- stream.py: the connection reader for any stream socket (framing, fairness, input and output
  bounds) and StreamListener, the accept loop;
- unix.py: the Unix-socket listener (bind, SO_PEERCRED);
- shm.py: the shared-memory rings a Unix-socket client may attach (SHM_ATTACH).
"""
