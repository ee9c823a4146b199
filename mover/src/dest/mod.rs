pub mod volume;
pub mod work;
