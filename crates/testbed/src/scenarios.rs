//! Scenario players.
