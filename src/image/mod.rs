//! image placeholder
