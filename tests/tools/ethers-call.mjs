// Calls a ya-runtime-erigon endpoint the way a requestor's user would, with ethers.
// usage: node ethers-call.mjs URL USER PASSWORD CHAIN_ID
// Prints {"chainId": "0x…", "blockNumber": N} and exits 0, or the error and exits 1.
import { FetchRequest, JsonRpcProvider, Network } from "ethers";

const [url, user, password, chainId] = process.argv.slice(2);
const request = new FetchRequest(url);
// The tests run nginx on loopback without TLS; production URLs are https.
request.allowInsecureAuthentication = true;
request.setCredentials(user, password);
const provider = new JsonRpcProvider(request, Network.from(BigInt(chainId)), {
  staticNetwork: true,
});
try {
  const id = await provider.send("eth_chainId", []);
  const blockNumber = await provider.getBlockNumber();
  console.log(JSON.stringify({ chainId: id, blockNumber }));
  process.exit(0);
} catch (error) {
  console.error(JSON.stringify({ error: error.shortMessage ?? String(error), status: error.info?.responseStatus ?? null }));
  process.exit(1);
} finally {
  provider.destroy();
}
