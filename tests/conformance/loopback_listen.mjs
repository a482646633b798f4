// Preload (node --import) that makes a server bind the loopback address.
//
// @modelcontextprotocol/server-everything (streamableHttp transport) calls
// `app.listen(PORT)` with no host and has no option or env var for one, so it
// would listen on every interface. This hook inserts a host into any
// `net.Server#listen` call that names a port but no host: 127.0.0.1, or
// $MCP_LISTEN_HOST when set. Calls that already name a host, and pipe / fd /
// handle listens, are left alone.
import net from "node:net";

const host = process.env.MCP_LISTEN_HOST || "127.0.0.1";
const originalListen = net.Server.prototype.listen;

function isPort(value) {
  return (
    typeof value === "number" ||
    (typeof value === "string" && value !== "" && Number(value) >= 0)
  );
}

net.Server.prototype.listen = function listen(...args) {
  const first = args[0];
  if (isPort(first)) {
    // listen(port[, host][, backlog][, callback])
    if (typeof args[1] !== "string") args.splice(1, 0, host);
  } else if (
    first !== null &&
    typeof first === "object" &&
    first.host === undefined &&
    first.path === undefined &&
    first.fd === undefined &&
    first.handle === undefined &&
    first._handle === undefined
  ) {
    // listen(options[, callback])
    args[0] = { ...first, host };
  }
  return originalListen.apply(this, args);
};
