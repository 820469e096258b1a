//! Loom models of the lock-free core (run with `make loom`).
#![cfg(loom)]
