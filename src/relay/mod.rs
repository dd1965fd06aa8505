//! What a relay (SFU) provider runs: the client ↔ relay wire format and a sans-IO router
//! keyed by opaque channel tokens. Never links against room or key secrets.
