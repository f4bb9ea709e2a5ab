//! A fixed-capacity ring buffer: allocated once, then written in place.

/// The last `capacity` values pushed, oldest first. The buffer is allocated when the ring
/// is made and never grows: [`push`](Ring::push) overwrites the oldest value once full.
#[derive(Debug, Clone)]
pub(super) struct Ring<T> {
    buf: Vec<T>,
    /// Where the next value goes once the ring is full (the oldest value).
    head: usize,
}

impl<T: Copy> Ring<T> {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity.max(1)),
            head: 0,
        }
    }

    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether a value was ever overwritten (the oldest values are gone).
    pub(super) fn is_full(&self) -> bool {
        self.buf.len() == self.buf.capacity()
    }

    pub(super) fn push(&mut self, value: T) {
        if self.is_full() {
            self.buf[self.head] = value;
            self.head = (self.head + 1) % self.buf.len();
        } else {
            // Within the capacity reserved at construction: no reallocation.
            self.buf.push(value);
        }
    }

    /// The newest value.
    pub(super) fn last(&self) -> Option<&T> {
        if self.buf.is_empty() {
            return None;
        }
        let i = if self.is_full() {
            (self.head + self.buf.len() - 1) % self.buf.len()
        } else {
            self.buf.len() - 1
        };
        self.buf.get(i)
    }

    /// The newest value, to update in place.
    pub(super) fn last_mut(&mut self) -> Option<&mut T> {
        if self.buf.is_empty() {
            return None;
        }
        let i = if self.is_full() {
            (self.head + self.buf.len() - 1) % self.buf.len()
        } else {
            self.buf.len() - 1
        };
        self.buf.get_mut(i)
    }

    /// The oldest value.
    pub(super) fn first(&self) -> Option<&T> {
        self.buf.get(if self.is_full() { self.head } else { 0 })
    }

    /// Oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        let (newer, older) = self
            .buf
            .split_at(if self.is_full() { self.head } else { 0 });
        older.iter().chain(newer)
    }
}

#[cfg(test)]
mod tests {
    use super::Ring;

    #[test]
    fn keeps_the_last_values_in_order_without_growing() {
        let mut r = Ring::with_capacity(3);
        assert!(r.last().is_none() && r.first().is_none());
        r.push(1);
        r.push(2);
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), [1, 2]);
        assert!(!r.is_full());
        for v in 3..=7 {
            r.push(v);
            assert_eq!(r.capacity(), 3);
        }
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!((r.first(), r.last(), r.len()), (Some(&5), Some(&7), 3));
        *r.last_mut().unwrap() = 70;
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), [5, 6, 70]);
    }
}
