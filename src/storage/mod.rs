//! Persistence and the change feed (`Store`, `ChangeEvent`). Arrives with the live-data work;
//! the DDP engine does not depend on it.
