//! Ranks as processes, connected over TCP after a rendezvous at `MASTER_ADDR`.
