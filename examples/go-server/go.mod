module example.com/karn/goserver

go 1.19
