"""
Generators of the committed files derived from the code (docs/protocol.md,
docs/schema.md, the C++ header): kept out of the runtime, which never imports them.
"""
