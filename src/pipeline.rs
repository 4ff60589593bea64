//! pipeline placeholder
