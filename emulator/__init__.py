"""Upstream identity provider emulator (development and tests only).

The demo and the test suite log in through MitID, FTN bank identification, Microsoft, Google
and Facebook without reaching the real services: ``emulator/`` is a small Flask app (port 5002
in the demo) that speaks each upstream's protocol as the broker meets it in production. Under
``/{kind}`` it serves discovery (``/{kind}/.well-known/openid-configuration``; Microsoft also at
``/microsoft/{common|organizations|consumers|<tenant id>}/v2.0/...`` with the issuer template
``.../{tenantid}/v2.0`` and ID tokens whose ``iss`` carries the person's real tenant id), its
JWK set, a login page where you pick or edit a test person (name, email, CPR or hetu, stable id,
level of assurance) and consent, a token endpoint and userinfo (Facebook: the Graph API's
``/facebook/me``, with no ``email`` for people who do not share one). MitID tokens are ES256 with
the claim names of the chosen broker (``?dialect=signaturgruppen|signicat|idura`` on the
discovery URL), CPR only with the CPR scope; FTN demands a signed request object and
``private_key_jwt``, and encrypts its ID tokens (RSA-OAEP + A128CBC-HS256) to the relying party's
key registered with ``POST /ftn/register-client`` (``{"client_id", "jwks"}``), with hetu under
``personal_identity_code``, ``hetu`` or ``nin`` (``?dialect=op|idura|signicat``). Codes work once.
Tests make the next ID token misbehave with ``POST /{kind}/_test/next-token-defect``
(``{"defect": "forged_signature" | "wrong_issuer" | "wrong_audience" | "expired" | "wrong_nonce"
| "alg_none" | "hs256_public_key" | "unencrypted"}``) and rotate keys with
``POST /{kind}/_test/rotate-keys``. The emulator refuses to start on anything but a loopback
address, and the broker's configuration accepts ``emulator_url`` only with ``dev_mode = true``.
"""

from .app import EmulatorRefused, create_emulator
from .personas import PERSONAS, Persona
from .state import DEFECTS, EmulatorState

__all__ = ["DEFECTS", "PERSONAS", "EmulatorRefused", "EmulatorState", "Persona",
           "create_emulator"]
