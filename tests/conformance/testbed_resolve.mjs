// Preload (node --import) that resolves bare imports from testbed/node_modules.
//
// ts_everything_server.mjs lives in tests/conformance/, where Node's ESM
// resolution walks up to tests/, the repo root, ... and never looks into
// testbed/node_modules. When a bare specifier (e.g. "express",
// "@modelcontextprotocol/sdk/server/mcp.js") is not found the normal way, this
// hook retries it as if imported from testbed/ ($MCP_WARDEN_TESTBED, default
// ../../testbed relative to this file).
import { registerHooks } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const testbed = process.env.MCP_WARDEN_TESTBED
  ? path.resolve(process.env.MCP_WARDEN_TESTBED)
  : path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "testbed");
const testbedParentURL = pathToFileURL(path.join(testbed, "package.json")).href;

registerHooks({
  resolve(specifier, context, nextResolve) {
    try {
      return nextResolve(specifier, context);
    } catch (err) {
      const bare = !/^(\.|\/|[a-zA-Z][a-zA-Z0-9+.-]*:)/.test(specifier);
      if (!bare || err?.code !== "ERR_MODULE_NOT_FOUND") throw err;
      return nextResolve(specifier, { ...context, parentURL: testbedParentURL });
    }
  },
});
