from actor_db.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
