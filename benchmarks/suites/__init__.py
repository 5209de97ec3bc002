"""The timed benchmarks, one file each (`python -m benchmarks NAME`); `rates_*` are sections of `rates`."""
