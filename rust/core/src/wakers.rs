//! `Wakers`: the wakers a semaphore call settled, to be woken once its lock is released (and,
//! in the bindings, a future's done-callbacks: the wakers of the tasks waiting on it).
//!
//! A release nearly always hands its permits to one waiter, and a future nearly always has
//! one task waiting, so the first waker is kept inline and only a second one allocates: a
//! `Vec` per release cost a heap allocation and a free on every contended hand-over.

/// Wakers in the order their waiters were settled (FIFO).
#[derive(Debug)]
pub struct Wakers<W> {
    first: Option<W>,
    rest: Vec<W>,
}

impl<W> Default for Wakers<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W> Wakers<W> {
    /// None yet; does not allocate.
    pub const fn new() -> Self {
        Self {
            first: None,
            rest: Vec::new(),
        }
    }

    pub fn push(&mut self, waker: W) {
        if self.first.is_none() {
            self.first = Some(waker);
        } else {
            self.rest.push(waker);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &W> {
        self.first.iter().chain(&self.rest)
    }

    /// Keeps the wakers for which `keep` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&W) -> bool) {
        let all = std::mem::take(self);
        self.extend(all.into_iter().filter(|w| keep(w)));
    }
}

// `first` is only empty when `rest` is: pushes fill it first and nothing removes from it.
impl<W> IntoIterator for Wakers<W> {
    type Item = W;
    type IntoIter = std::iter::Chain<std::option::IntoIter<W>, std::vec::IntoIter<W>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.rest)
    }
}

impl<W> Extend<W> for Wakers<W> {
    fn extend<I: IntoIterator<Item = W>>(&mut self, iter: I) {
        for waker in iter {
            self.push(waker);
        }
    }
}

impl<W> FromIterator<W> for Wakers<W> {
    fn from_iter<I: IntoIterator<Item = W>>(iter: I) -> Self {
        let mut wakers = Self::new();
        wakers.extend(iter);
        wakers
    }
}

impl<W: PartialEq> PartialEq for Wakers<W> {
    fn eq(&self, other: &Self) -> bool {
        self.first == other.first && self.rest == other.rest
    }
}

impl<W: PartialEq> PartialEq<Vec<W>> for Wakers<W> {
    fn eq(&self, other: &Vec<W>) -> bool {
        self.len() == other.len() && self.iter().eq(other)
    }
}

impl<W> From<Wakers<W>> for Vec<W> {
    fn from(wakers: Wakers<W>) -> Self {
        wakers.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Wakers;

    #[test]
    fn keeps_the_order_of_pushes() {
        let mut w = Wakers::new();
        assert!(w.is_empty());
        assert_eq!(w.len(), 0);
        for i in 0..5 {
            w.push(i);
        }
        assert!(!w.is_empty());
        assert_eq!(w.len(), 5);
        assert_eq!(Vec::from(w), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn one_waker_does_not_allocate() {
        let mut w = Wakers::new();
        w.push("only");
        assert_eq!(w.rest.capacity(), 0);
        assert_eq!(Vec::from(w), vec!["only"]);
    }

    #[test]
    fn extend_and_collect_keep_the_order() {
        let mut a: Wakers<i32> = [1, 2].into_iter().collect();
        a.extend([3, 4, 5].into_iter().collect::<Wakers<i32>>());
        a.extend(Wakers::new());
        assert_eq!(Vec::from(a), vec![1, 2, 3, 4, 5]);
        let mut empty = Wakers::new();
        empty.extend([7]);
        assert_eq!(Vec::from(empty), vec![7]);
    }

    #[test]
    fn retain_keeps_the_order_and_refills_the_inline_slot() {
        let mut w: Wakers<i32> = (1..=5).collect();
        w.retain(|&x| x != 1 && x != 4);
        assert_eq!(w.iter().copied().collect::<Vec<_>>(), vec![2, 3, 5]);
        w.push(6);
        assert_eq!(w, vec![2, 3, 5, 6]);
        w.retain(|_| false);
        assert!(w.is_empty());
        w.push(7);
        assert_eq!(w, vec![7]);
    }

    #[test]
    fn compares_by_content_and_order() {
        let w: Wakers<i32> = [1, 2].into_iter().collect();
        assert_eq!(w, vec![1, 2]);
        assert_ne!(w, vec![2, 1]);
        assert_ne!(w, vec![1]);
        assert_eq!(w, [1, 2].into_iter().collect::<Wakers<i32>>());
        assert_eq!(Wakers::<i32>::new(), Vec::<i32>::new());
    }
}
