//! A counting global allocator for allocation tests: each test binary that includes this
//! (with `#[path]`) counts the allocations one thread makes inside `allocations_in`, and
//! the heap bytes it allocates minus those it frees inside `heap_change_in`. Per thread,
//! since tests run in parallel. Only the Rust global allocator is seen: memory C code
//! (e.g. libopus) takes from `malloc` itself is not.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static BYTES: Cell<isize> = const { Cell::new(0) };
}

fn counting() -> bool {
    COUNTING.try_with(|c| c.get()).unwrap_or(false)
}

fn count_one() {
    if counting() {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
    }
}

fn count_bytes(delta: isize) {
    if counting() {
        let _ = BYTES.try_with(|b| b.set(b.get() + delta));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        count_bytes(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count_bytes(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        count_bytes(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns how many allocations this thread made meanwhile.
pub fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get) - before
}

/// Runs `f` and returns its result and the heap bytes this thread allocated minus those
/// it freed meanwhile (negative: it freed more than it allocated).
#[allow(dead_code)]
pub fn heap_change_in<R>(f: impl FnOnce() -> R) -> (R, isize) {
    let before = BYTES.with(Cell::get);
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, BYTES.with(Cell::get) - before)
}

/// The counter itself works (runs in every binary that includes this file).
#[test]
fn counter_works() {
    let n = allocations_in(|| {
        let v: Vec<u8> = Vec::with_capacity(10);
        std::hint::black_box(v);
    });
    assert_eq!(n, 1);
}
