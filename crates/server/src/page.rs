//! Pages of a listing: a listing of agents or sync points can outgrow one gRPC message (thousands
//! of retained points, agents carrying the most metadata allowed), so it is served in pages that
//! each fit. A page starts after the previous page's last key, holds at most the requested count
//! and at most a byte budget of encoded items, and always at least one item, so that a listing
//! always makes progress.

use prost::Message;

/// Items per page when the request names no size.
pub const DEFAULT_PAGE_SIZE: usize = 1_000;

/// The most items a request may ask for per page.
pub const MAX_PAGE_SIZE: usize = 10_000;

/// One page of `items` (sorted by `key`, ascending and unique): those after `token`, converted,
/// at most `page_size` of them (0: [`DEFAULT_PAGE_SIZE`]) and `budget` encoded bytes, but at
/// least one. Returns the page and the next page's token (empty when nothing follows).
pub fn page<T, M: Message>(
    items: &[T],
    key: impl Fn(&T) -> &str,
    token: &str,
    page_size: u32,
    budget: usize,
    convert: impl Fn(&T) -> M,
) -> (Vec<M>, String) {
    let size = match page_size as usize {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    let start = if token.is_empty() { 0 } else { items.partition_point(|item| key(item) <= token) };
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for item in &items[start..] {
        if out.len() == size {
            break;
        }
        let converted = convert(item);
        // A repeated field costs its encoded length plus a tag and a length prefix.
        let len = converted.encoded_len() + 8;
        if !out.is_empty() && bytes + len > budget {
            break;
        }
        bytes += len;
        out.push(converted);
    }
    let next = match items.get(start + out.len()) {
        Some(_) => key(&items[start + out.len() - 1]).to_owned(),
        None => String::new(),
    };
    (out, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("k{i:03}")).collect()
    }

    /// Walks every page of `items`; returns them and the pages' lengths.
    fn walk(items: &[String], page_size: u32, budget: usize) -> (Vec<String>, Vec<usize>) {
        let (mut all, mut lengths, mut token) = (Vec::new(), Vec::new(), String::new());
        loop {
            let (page, next) = page(items, |s| s.as_str(), &token, page_size, budget, |s| s.clone());
            lengths.push(page.len());
            all.extend(page);
            if next.is_empty() {
                return (all, lengths);
            }
            token = next;
        }
    }

    #[test]
    fn pages_cover_every_item_once_in_order_bounded_by_count() {
        let items = keys(25);
        let (all, lengths) = walk(&items, 10, usize::MAX);
        assert_eq!(all, items);
        assert_eq!(lengths, vec![10, 10, 5]);
        assert_eq!(walk(&items, 0, usize::MAX).1, vec![25], "the default size");
        assert_eq!(walk(&[], 10, usize::MAX), (vec![], vec![0]), "an empty listing is one empty page");
    }

    #[test]
    fn pages_are_bounded_by_bytes_but_hold_at_least_one_item() {
        let items = keys(6);
        // Each item encodes as 4 bytes plus its tag and prefix (2), counted with 8 of overhead: 14.
        let (all, lengths) = walk(&items, 100, 30);
        assert_eq!(all, items);
        assert_eq!(lengths, vec![2, 2, 2]);
        assert_eq!(walk(&items, 100, 1).1, vec![1; 6], "a budget below one item still makes progress");
    }

    #[test]
    fn a_token_between_keys_starts_after_it() {
        let items = keys(5);
        let (page, next) = page(&items, |s| s.as_str(), "k001x", 2, usize::MAX, |s| s.clone());
        assert_eq!((page, next.as_str()), (vec!["k002".to_string(), "k003".to_string()], "k003"));
    }
}
