"""`[server] tls_cert`/`tls_key` serve HTTPS directly through hypercorn."""

from __future__ import annotations

import ssl
from pathlib import Path

import openai
import trio
import trustme

from actorproxy import config as cfg
from tests.harness import MASTER_KEY, open_proxy, proxy_config


async def test_https_with_the_openai_sdk(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, bundle = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    ca.cert_pem.write_to_path(str(bundle))
    server = cfg.ServerConfig(port=0, tls_cert=str(cert), tls_key=str(key), graceful_timeout_s=2)
    config = proxy_config(
        cfg.ProviderConfig(name="mock", kind="mock"),
        models=[cfg.ModelConfig(name="mock", targets=["mock/mock"])],
        server=server,
    )
    with trio.fail_after(20):
        async with open_proxy(config, {"ACTORPROXY_MASTER_KEY": MASTER_KEY}) as proxy:
            url = proxy.urls[0]
            assert url.startswith("https://")
            http = openai.DefaultAsyncHttpxClient(verify=ssl.create_default_context(cafile=bundle))
            async with openai.AsyncOpenAI(
                base_url=url + "/v1", api_key=MASTER_KEY, max_retries=0, http_client=http
            ) as client:
                reply = await client.chat.completions.create(
                    model="mock", messages=[{"role": "user", "content": "over tls"}]
                )
    assert reply.choices[0].message.content == "mock reply: over tls"
