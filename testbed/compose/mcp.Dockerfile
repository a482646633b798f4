# syntax=docker/dockerfile:1
# The testbed's Python side: the MCP server with a fault switch (testbed/servers/fault_server.py)
# and the demo agent (agent.py), both on the official MCP Python SDK at the testbed's pin.
# Build context: the repository root (testbed/docker-compose.yml does this).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# Keep in step with testbed/requirements.txt (tests/integration/test_deploy_manifests.py checks).
ARG MCP_VERSION=2.3.0
RUN pip install --no-cache-dir --disable-pip-version-check "mcp==${MCP_VERSION}"

WORKDIR /app
COPY testbed/servers/fault_server.py testbed/compose/agent.py ./
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65534:65534
ENTRYPOINT ["python"]
CMD ["fault_server.py", "--help"]
