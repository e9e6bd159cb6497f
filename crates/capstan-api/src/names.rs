//! Names Capstan makes up for the objects it creates, and the stable hash they (and the shard
//! assignment of applications) are built on.

/// FNV-1a, 64 bit. Unlike std's hasher it is fixed across Rust releases and platforms, which a
/// name stored in a cluster, or an assignment several replicas of different versions share,
/// needs.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// `<prefix>-<readable>-<hash>`: `readable` lowercased with every other character than a
/// letter or digit turned into `-`, cut to `max_readable` characters and trimmed of `-`, then 8
/// hex digits of the FNV-1a hash of `unique`, so that two different `unique` values never share
/// a name however alike they read. With a DNS-label `prefix` and `prefix.len() + max_readable +
/// 10 <= 63`, the result is a valid DNS label.
pub fn generated_name(prefix: &str, readable: &str, unique: &str, max_readable: usize) -> String {
    let readable: String = readable
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(max_readable)
        .collect();
    let readable = readable.trim_matches('-');
    let hash = fnv1a(unique.bytes()) as u32;
    if readable.is_empty() {
        format!("{prefix}-{hash:08x}")
    } else {
        format!("{prefix}-{readable}-{hash:08x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_has_its_published_values() {
        // The FNV-1a 64-bit test vectors: "" and "a".
        assert_eq!(fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn generated_names_are_dns_labels_and_tell_apart_what_reads_alike() {
        let a = generated_name("repo", "My_Repo.git", "https://x/My_Repo.git", 30);
        let b = generated_name("repo", "my-repo-git", "https://x/my-repo-git", 30);
        assert!(a.starts_with("repo-my-repo-git-"), "{a}");
        assert_ne!(a, b);
        assert_eq!(
            generated_name("repo", "///", "k", 30).len(),
            "repo-".len() + 8
        );
        let long = generated_name("capstan-controller-member", &"x".repeat(99), "x", 28);
        assert_eq!(long.len(), 63);
        for name in [a, b, long] {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
        }
    }
}
