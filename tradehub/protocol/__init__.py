"""The wire protocol: field types, layouts, framing and the session state machine."""
