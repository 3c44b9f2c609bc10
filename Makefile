# Thin wrapper over CMake + Ninja (DuckDB's convention). The README's two commands are
# `make demo` and `make test`; both install missing Debian packages first (scripts/deps.sh).
JOBS ?= $(shell nproc)
CTEST_ARGS ?=
CMAKE_GEN := -G Ninja

.PHONY: all release deps test demo bench asan tsan clean format

all: release

deps:
	@bash scripts/deps.sh

build/build.ninja: | deps
	cmake -S . -B build $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo

release: deps build/build.ninja
	cmake --build build -j $(JOBS)

test: release
	cd build && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

demo: release
	./build/marble demo

bench: release
	./build/marble-bench sched
	./build/marble-bench vfs
	./build/marble-bench arrow
	./build/marble-bench db --num 200000
	bash bench/remote.sh

build-asan/build.ninja: | deps
	cmake -S . -B build-asan $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Debug -DMARBLE_SANITIZE=address -DMARBLE_BENCH=OFF

asan: deps build-asan/build.ninja
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

build-tsan/build.ninja: | deps
	cmake -S . -B build-tsan $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMARBLE_SANITIZE=thread -DMARBLE_BENCH=OFF

tsan: deps build-tsan/build.ninja
	cmake --build build-tsan -j $(JOBS)
	cd build-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
		ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

format:
	clang-format -i $$(git ls-files '*.c' '*.h' '*.cpp')

clean:
	rm -rf build build-asan build-tsan
