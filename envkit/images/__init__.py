"""Images: content keys, and making what is missing.

``context`` (what a build context holds), ``statcache`` and ``digest`` (content
keys), ``manifests`` (why an image was rebuilt), ``build`` (plan and ensure: the
scheduler), the builders ``classic`` (Docker's classic builder) and ``recipe``
(a Debian root filesystem), ``dockerfile`` (just enough of the grammar), and
``gc``. A remote cache and envkit's own image assembler go beside the builders.
"""
