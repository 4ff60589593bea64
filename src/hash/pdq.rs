//! PDQ placeholder
