//! A throwaway nkey user seed, for `nats-server -t` on configurations that read one from
//! the environment (nats-server rejects a seed that is not well formed, so a placeholder
//! will not do). Made afresh on every run and never stored: no manifest holds a seed.

/// A new user seed (`SU…`).
pub fn user_seed() -> String {
    nkeys::KeyPair::new_user()
        .seed()
        .expect("a new key pair has its seed")
}

/// Whether `token` has the shape of an nkey seed: `S` and a key type, 58 base32 characters.
pub fn looks_like_a_seed(token: &str) -> bool {
    token.len() == 58
        && token
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        && token.starts_with('S')
        && b"UAONCPX".contains(&token.as_bytes()[1])
}

#[test]
fn a_new_seed_has_the_shape_of_one() {
    let seed = user_seed();
    assert!(seed.starts_with("SU"), "{seed}");
    assert!(looks_like_a_seed(&seed), "{seed}");
    assert_ne!(seed, user_seed());
    let public = nkeys::KeyPair::new_user().public_key();
    assert!(
        !looks_like_a_seed(&public),
        "a public key is not a seed: {public}"
    );
}
