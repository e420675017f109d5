"""The official openai SDK over HTTPS, trusting a certificate made for the
test (a custom CA, as behind a private PKI): plain and streamed chat over the
gateway's TLS listener."""

import os
import ssl
import subprocess
import tempfile

import openai
import pytest

from conftest import BIN, CONF
from gateway_stack import Stack


@pytest.fixture(scope="module")
def tls_stack():
    tmp = tempfile.mkdtemp(prefix="codex-proxy-https-")
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    conf = CONF.replace(
        'listen: ["127.0.0.1:0"]',
        'listen:\n    - {{address: "127.0.0.1:0", tls: {{cert: "{cert}", key: "{key}"}}}}',
    )
    s = Stack(BIN, tmp, conf, "https@example.com", scheme="https", cert=cert, key=key)
    s.cert = cert
    yield s
    s.stop()


def client(stack):
    ctx = ssl.create_default_context(cafile=stack.cert)
    return openai.OpenAI(base_url=stack.base + "/v1", api_key=stack.key, max_retries=0, timeout=30,
                         http_client=openai.DefaultHttpxClient(verify=ctx))


def test_chat_and_stream_over_https_with_a_custom_ca(tls_stack):
    assert tls_stack.base.startswith("https://127.0.0.1:")
    oa = client(tls_stack)
    r = oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content
    text = ""
    for chunk in oa.chat.completions.create(model="gpt-4o-mini", stream=True,
                                            messages=[{"role": "user", "content": "hi"}]):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    assert text


def test_an_untrusted_certificate_is_refused(tls_stack):
    oa = openai.OpenAI(base_url=tls_stack.base + "/v1", api_key=tls_stack.key, max_retries=0, timeout=10)
    with pytest.raises(openai.APIConnectionError):
        oa.models.list()
