"""The exact HMM language: its joint, AR conditionals and masked marginals by enumeration."""
