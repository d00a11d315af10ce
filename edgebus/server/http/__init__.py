"""The HTTP API and the web console (docs/HTTP.md): routes, JSON records, the live tail, the
OpenAPI document and the console's static files. The listener that serves them on the loop is
edgebus/server/listeners/http.py."""
