module dcu-dra/tests/node/pause

go 1.26.0
