//! The nth prime by a segmented sieve of Eratosthenes: memory stays at the
//! square root of the search bound (a few kB even for n = 10^7), so many
//! computations can run side by side without crowding the host.

/// Numbers sieved per segment: small enough to stay in the L1/L2 cache.
const SEGMENT: usize = 32 * 1024;

/// The nth prime, counting 2 as the first.
///
/// # Panics
/// When `n` is 0: there is no 0th prime. Callers validate first.
pub fn nth_prime(n: u64) -> u64 {
    assert!(n >= 1, "primes are counted from 1");
    // Rosser's bound below holds from n = 6 on.
    const FIRST: [u64; 5] = [2, 3, 5, 7, 11];
    if n <= FIRST.len() as u64 {
        return FIRST[(n - 1) as usize];
    }
    let limit = upper_bound(n);
    let base = primes_up_to(limit.isqrt());
    let mut composite = vec![false; SEGMENT];
    let mut count = 0;
    let mut low = 2;
    while low <= limit {
        let high = (low + SEGMENT as u64).min(limit + 1);
        let len = (high - low) as usize;
        composite[..len].fill(false);
        for &p in base.iter().take_while(|&&p| p * p < high) {
            let mut multiple = (p * p).max(low.div_ceil(p) * p);
            while multiple < high {
                composite[(multiple - low) as usize] = true;
                multiple += p;
            }
        }
        for (offset, &is_composite) in composite[..len].iter().enumerate() {
            if !is_composite {
                count += 1;
                if count == n {
                    return low + offset as u64;
                }
            }
        }
        low = high;
    }
    unreachable!("Rosser: the nth prime is below n(ln n + ln ln n) for n >= 6")
}

/// An upper bound on the nth prime for n >= 6: n(ln n + ln ln n).
fn upper_bound(n: u64) -> u64 {
    let n = n as f64;
    let ln = n.ln();
    // +1 absorbs any rounding in the floating-point estimate.
    (n * (ln + ln.ln())).ceil() as u64 + 1
}

/// Every prime up to `limit`, by a plain sieve (used for the base primes).
fn primes_up_to(limit: u64) -> Vec<u64> {
    let limit = limit as usize;
    let mut composite = vec![false; limit + 1];
    let mut primes = Vec::new();
    for candidate in 2..=limit {
        if composite[candidate] {
            continue;
        }
        primes.push(candidate as u64);
        for multiple in (candidate * candidate..=limit).step_by(candidate) {
            composite[multiple] = true;
        }
    }
    primes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_prime(candidate: u64) -> bool {
        candidate >= 2
            && (2..)
                .take_while(|d| d * d <= candidate)
                .all(|d| !candidate.is_multiple_of(d))
    }

    #[test]
    fn known_values() {
        for (n, prime) in [
            (1, 2),
            (2, 3),
            (5, 11),
            (6, 13),
            (1001, 7927),
            (5001, 48619),
            (9001, 93187),
            (1_000_000, 15_485_863),
        ] {
            assert_eq!(nth_prime(n), prime, "the {n}th prime");
        }
    }

    #[test]
    fn agrees_with_trial_division() {
        // Up to 100,000: a few segments, so segment boundaries are crossed.
        let primes: Vec<u64> = (2..100_000).filter(|&c| is_prime(c)).collect();
        for index in (0..primes.len()).step_by(97).chain([primes.len() - 1]) {
            let n = index as u64 + 1;
            assert_eq!(nth_prime(n), primes[index], "the {n}th prime");
        }
    }

    #[test]
    #[should_panic(expected = "counted from 1")]
    fn zero_is_refused() {
        nth_prime(0);
    }
}
