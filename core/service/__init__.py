"""The segment service: a read-only HTTP API and MCP server over the finished run (issue 17).

An application package, like :mod:`core.pipeline`: it sits on top of every
stage and no stage imports it. Modules, in the order a request meets them:

- :mod:`core.service.settings`: the ``service`` section of config.yml.
- :mod:`core.service.keys`: API keys (stored as SHA-256 hashes) and their scopes.
- :mod:`core.service.audit`: the audit log of customer-level requests.
- :mod:`core.service.run`: the finished run, verified and held in memory.
- :mod:`core.service.answers`: what every endpoint and tool answers (one place for HTTP and MCP).
- :mod:`core.service.api`: the HTTP API (Starlette) with the MCP endpoint mounted.
- :mod:`core.service.mcp_server`: the MCP tools, resources and prompt.
- :mod:`core.service.server`: start-up (uvicorn, or MCP over stdio).
"""
