//! Control messages on the gateway↔worker Unix socket (handshake, model status).
//! Owned by the gateway/worker authors; filled in separately.
