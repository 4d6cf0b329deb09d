import Glibc

/// A bounded, closable queue between two threads: the stages of the write and read-back
/// pipelines talk through these, so no stage ever holds more than the ring's buffers.
public final class Channel<Element>: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let changed = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var items: [Element] = []
    private let capacity: Int
    private var closed = false

    /// - Parameter capacity: how many elements may wait at once.
    public init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(changed, nil)
        items.reserveCapacity(capacity)
    }

    deinit {
        pthread_cond_destroy(changed)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        changed.deallocate()
    }

    /// Adds an element, waiting while the queue is full.
    /// - Returns: false when the channel was closed (the element is dropped).
    @discardableResult
    public func send(_ element: Element) -> Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while items.count >= capacity && !closed { pthread_cond_wait(changed, mutex) }
        if closed { return false }
        items.append(element)
        pthread_cond_broadcast(changed)
        return true
    }

    /// Takes the oldest element, waiting while the queue is empty.
    /// - Returns: nil once the channel is closed and drained.
    public func receive() -> Element? {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while items.isEmpty && !closed { pthread_cond_wait(changed, mutex) }
        if items.isEmpty { return nil }
        let element = items.removeFirst()
        pthread_cond_broadcast(changed)
        return element
    }

    /// Ends the channel: senders stop, receivers drain what is left and then get nil.
    public func close() {
        pthread_mutex_lock(mutex)
        closed = true
        pthread_cond_broadcast(changed)
        pthread_mutex_unlock(mutex)
    }
}

/// A dedicated OS thread for blocking work (O_DIRECT I/O, decompression, libext2fs), kept off the
/// Swift concurrency pool. ``join()`` waits for it.
public final class WorkerThread: @unchecked Sendable {
    private var thread = pthread_t()

    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    /// Starts `body` on a new thread.
    public init(_ body: @escaping () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create failed: \(rc)")
    }

    /// Waits until the thread has finished.
    public func join() {
        pthread_join(thread, nil)
    }
}

/// A value written by one thread and read by another after ``WorkerThread/join()``, or guarded by
/// its own lock for reads while running.
public final class Locked<Value>: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with exclusive access to the value.
    public func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
