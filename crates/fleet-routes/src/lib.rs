//! What the engine and the gateway exchange, as plain data, so neither depends on the
//! other: the engine publishes a route table (server → revisions → weights → instance
//! addresses, [`table`]) and reads what traffic each revision saw ([`traffic`]) to judge
//! a canary; the gateway routes with the table and counts the traffic. The gateway's
//! record of each tool call ([`audit`]) is here too, so the gateway, the state store that
//! keeps it and the API that serves it share one type without depending on each other.

pub mod audit;
pub mod table;
pub mod traffic;
