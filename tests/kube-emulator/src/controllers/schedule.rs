//! stub
pub struct Schedule;
