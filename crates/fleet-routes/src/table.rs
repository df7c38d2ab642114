//! The route table: server → revisions → weights → instance addresses.
