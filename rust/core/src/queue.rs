//! `Fifo`: the wait queue of the semaphore and of the rate limiters (`waitq`), a doubly linked
//! list threaded through a slab.
//!
//! Every entry lives in a slot of one `Vec`; the slots of the queued entries are linked in
//! arrival order, and the free slots in a free list. So pushing at the back, popping at the
//! front and removing any entry by its slot number are all O(1), with no allocation once the
//! slab has grown to the longest queue seen (it is given back when a long queue drains).
//! A queued request remembers its slot (the tickets store it), which is what
//! makes withdrawing it from anywhere in the queue O(1) instead of a search.

/// No slot: the end of a list.
const NIL: usize = usize::MAX;

/// Slabs larger than this are shrunk when the queue becomes empty.
const KEEP_SLOTS: usize = 1024;

struct Slot<T> {
    /// `Some` while queued; `None` while the slot is on the free list.
    value: Option<T>,
    prev: usize,
    /// The next queued slot, or for a free slot the next free one.
    next: usize,
}

/// A FIFO queue with O(1) removal by slot number (see the module documentation).
pub(crate) struct Fifo<T> {
    slots: Vec<Slot<T>>,
    head: usize,
    tail: usize,
    free: usize,
    len: usize,
}

impl<T> Fifo<T> {
    pub(crate) const fn new() -> Self {
        Self {
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
            free: NIL,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot the next `push_back` will use.
    pub(crate) fn vacant(&self) -> usize {
        if self.free == NIL {
            self.slots.len()
        } else {
            self.free
        }
    }

    /// Queues `value` at the back; returns its slot (the one `vacant` named).
    pub(crate) fn push_back(&mut self, value: T) -> usize {
        let slot = if self.free == NIL {
            self.slots.push(Slot {
                value: None,
                prev: NIL,
                next: NIL,
            });
            self.slots.len() - 1
        } else {
            let slot = self.free;
            self.free = self.slots[slot].next;
            slot
        };
        self.slots[slot] = Slot {
            value: Some(value),
            prev: self.tail,
            next: NIL,
        };
        match self.tail {
            NIL => self.head = slot,
            tail => self.slots[tail].next = slot,
        }
        self.tail = slot;
        self.len += 1;
        slot
    }

    pub(crate) fn front(&self) -> Option<&T> {
        self.get(self.head)
    }

    /// The value queued in `slot`, if any.
    pub(crate) fn get(&self, slot: usize) -> Option<&T> {
        self.slots.get(slot).and_then(|s| s.value.as_ref())
    }

    pub(crate) fn pop_front(&mut self) -> Option<T> {
        self.remove(self.head)
    }

    /// Takes the value queued in `slot` out of the queue, wherever it is.
    pub(crate) fn remove(&mut self, slot: usize) -> Option<T> {
        let value = self.slots.get_mut(slot)?.value.take()?;
        let Slot { prev, next, .. } = self.slots[slot];
        match prev {
            NIL => self.head = next,
            prev => self.slots[prev].next = next,
        }
        match next {
            NIL => self.tail = prev,
            next => self.slots[next].prev = prev,
        }
        self.slots[slot].next = self.free;
        self.free = slot;
        self.len -= 1;
        if self.len == 0 && self.slots.len() > KEEP_SLOTS {
            // A burst is over: give its memory back (the free list goes with it).
            self.slots = Vec::new();
            self.free = NIL;
        }
        Some(value)
    }

    /// Removes and returns, in queue order, every value for which `remove` is true.
    pub(crate) fn extract_if(&mut self, mut remove: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut out = Vec::new();
        let mut slot = self.head;
        while slot != NIL {
            let next = self.slots[slot].next;
            if self.slots[slot].value.as_ref().is_some_and(&mut remove) {
                out.extend(self.remove(slot));
            }
            slot = next;
        }
        out
    }

    /// Removes every value, in queue order.
    pub(crate) fn drain(&mut self) -> Vec<T> {
        self.extract_if(|_| true)
    }

    /// The values in queue order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        let mut slot = self.head;
        std::iter::from_fn(move || {
            let s = self.slots.get(slot)?;
            slot = s.next;
            s.value.as_ref()
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn contents(q: &Fifo<u32>) -> Vec<u32> {
        q.iter().copied().collect()
    }

    #[test]
    fn fifo_order_and_removal_from_anywhere() {
        let mut q = Fifo::new();
        let slots: Vec<usize> = (0..5).map(|v| q.push_back(v)).collect();
        assert_eq!(contents(&q), [0, 1, 2, 3, 4]);
        assert_eq!(q.remove(slots[2]), Some(2)); // middle
        assert_eq!(q.remove(slots[2]), None, "already removed");
        assert_eq!(q.remove(slots[4]), Some(4)); // back
        assert_eq!(q.remove(slots[0]), Some(0)); // front
        assert_eq!(contents(&q), [1, 3]);
        assert_eq!(q.len(), 2);
        // Freed slots are reused, and `vacant` says which one comes next.
        let next = q.vacant();
        assert_eq!(q.push_back(9), next);
        assert!(slots.contains(&next));
        assert_eq!(contents(&q), [1, 3, 9]);
        assert_eq!(q.pop_front(), Some(1));
        assert_eq!(q.front(), Some(&3));
        assert_eq!(q.extract_if(|v| *v > 5), vec![9]);
        assert_eq!(q.drain(), vec![3]);
        assert!(q.is_empty());
        assert_eq!(q.front(), None);
        assert_eq!(q.pop_front(), None);
        assert_eq!(q.remove(usize::MAX), None);
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let mut q = Fifo::new();
        let slots: Vec<usize> = (0..2 * KEEP_SLOTS as u32).map(|v| q.push_back(v)).collect();
        for slot in slots.into_iter().rev() {
            assert!(q.remove(slot).is_some());
        }
        assert!(q.is_empty());
        assert_eq!(q.slots.capacity(), 0);
        q.push_back(1);
        assert_eq!(contents(&q), [1]);
    }

    /// Withdrawing every entry of a long queue, oldest first, newest first or alternating
    /// from both ends, touches a bounded number of slots per removal: each `remove` is O(1).
    /// (A search of the queue, as with `VecDeque::iter().position`, would make the newest-
    /// first order quadratic: about 1.25e9 steps for these 50,000 entries.)
    #[test]
    fn removing_fifty_thousand_entries_in_any_order_is_linear() {
        const N: u32 = 50_000;
        for order in ["oldest first", "newest first", "both ends"] {
            let mut q = Fifo::new();
            let mut slots: Vec<usize> = (0..N).map(|v| q.push_back(v)).collect();
            if order == "newest first" {
                slots.reverse();
            } else if order == "both ends" {
                let (front, back) = slots.split_at(N as usize / 2);
                slots = front
                    .iter()
                    .zip(back.iter().rev())
                    .flat_map(|(a, b)| [*a, *b])
                    .collect();
            }
            let mut removed = 0;
            for slot in slots {
                assert!(q.remove(slot).is_some(), "{order}");
                removed += 1;
            }
            assert_eq!(removed, N);
            assert!(q.is_empty(), "{order}");
        }
    }
}
