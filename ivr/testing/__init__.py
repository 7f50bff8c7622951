"""Test and tester tooling, apart from the live call path.

Nothing in the live path (ivr/call.py, ivr/server.py, the telephony, speech and dialog
subpackages) imports from here. What lives here:

- sandbox.py   a throwaway Asterisk 22 on loopback (`ivr sandbox`, the Asterisk tests)
- sipcaller.py real SIP callers for it: SIPp with scripted G.711/RFC 4733 audio, what they hear
- testcall.py  manifest calls originated through a real Asterisk (`ivr call`)
- simline.py   a simulated phone line on an audio clock (no Asterisk)
- replay.py    recorded caller audio through the whole pipeline, judged (`ivr replay`, `ivr demo`)
- fixtures.py  the audio fixture manifest (audio_fixtures/manifest.yaml)
- pgserver.py  a throwaway PostgreSQL server for the storage tests
"""
