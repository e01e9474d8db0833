//! `shoal bench ...`: benchmark programs that print figures anyone can rerun.
