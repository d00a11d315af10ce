"""Request handlers, grouped by what they serve (the table is built in edgebus/server/dispatch.py):

- data.py: PRODUCE, FETCH, LIST_OFFSETS and parked fetches (the data plane, the hot path);
- admin.py: API_VERSIONS, METADATA, CREATE_TOPIC, DELETE_TOPIC, STATUS;
- the group APIs: edgebus/server/groups/handlers.py; SHM_ATTACH: edgebus/server/listeners/shm_transport.py.
"""
