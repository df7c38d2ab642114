//! Traffic counters per server revision, as the gateway reports them and canary
//! analysis reads them.
