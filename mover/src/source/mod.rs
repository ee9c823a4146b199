pub mod confined;
pub mod meta;
