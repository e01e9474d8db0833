//! agent lib
