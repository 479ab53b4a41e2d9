//! Typed methods: a request struct names its method and the shape of its `result`.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A REST method with typed parameters (`Self`) and result (`Output`).
pub trait Method: Serialize + Send + Sync {
    /// The method name, as Bitrix24 spells it (names are case-insensitive on the portal).
    const NAME: &'static str;
    type Output: DeserializeOwned + Send;
}

/// A list method paged with `start` (pages of 50).
pub trait ListMethod: Method<Output = Vec<Self::Item>> {
    type Item: DeserializeOwned + Send;
    fn set_start(&mut self, start: u64);
}

/// One page of a list method.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: T,
    /// Total records (absent with `start=-1`).
    pub total: Option<u64>,
    /// `start` of the next page, when there is one.
    pub next: Option<u64>,
}
