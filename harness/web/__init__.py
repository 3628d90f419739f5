"""The offline web the agents navigate (WebWalkerQA's "given URL, click only" setting, arXiv
2501.07572): site packs (`pack.py`: a manifest and its HTML pages) served on 127.0.0.1 for the length
of a run (`server.py`), a browser that fetches only the served sites' canonical URLs and turns every
failure into a counted outcome (`browser.py`), pages read as text and numbered links (`page.py`), and
the episode the agents act in: reset, click, back, within page and step budgets (`env.py`).

Agents only ever see canonical URLs (`https://www.site.example/x`); the port a pack is served on
lives in the transport alone, so the same pack and actions give the same observations on any run.
"""
