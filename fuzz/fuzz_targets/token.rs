//! Access tokens as a caller presents them: anything is verified or refused, never a panic.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tether_machine::auth::{ApiKeys, TokenAuthority};

fn authority() -> &'static TokenAuthority {
    static AUTHORITY: OnceLock<TokenAuthority> = OnceLock::new();
    AUTHORITY.get_or_init(|| {
        let keys: HashMap<String, String> = [("key-a".to_string(), "secret".to_string())].into();
        TokenAuthority::new("fuzz", ApiKeys::new(&keys)).expect("a signing key")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    assert!(authority().verify(&text).is_err() || text.contains('.'));
});
